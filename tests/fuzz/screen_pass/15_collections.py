import bpy

props = bpy.data.collections.new("Props")
bpy.context.scene.collection.children.link(props)
for name in ("Chair", "Table", "Lamp"):
    mesh = bpy.data.meshes.new(name + "Mesh")
    obj = bpy.data.objects.new(name, mesh)
    props.objects.link(obj)
props.hide_render = False

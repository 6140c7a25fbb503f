import bpy

out = bpy.path.abspath("//export/scene.glb")
bpy.ops.export_scene.gltf(filepath=out, export_format='GLB')
bpy.ops.wm.save_as_mainfile(filepath=bpy.path.abspath("//scene_copy.blend"), copy=True)
bpy.ops.image.open(filepath=bpy.path.abspath("//tex.png"))

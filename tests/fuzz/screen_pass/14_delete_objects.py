import bpy

bpy.ops.object.select_all(action='DESELECT')
for obj in list(bpy.data.objects):
    if obj.name.startswith("Temp"):
        obj.select_set(True)
bpy.ops.object.delete()
old = bpy.data.objects.get("Old")
if old is not None:
    bpy.data.objects.remove(old, do_unlink=True)
coll = bpy.data.collections.get("Scratch")
if coll:
    for o in list(coll.objects):
        coll.objects.unlink(o)
    bpy.context.scene.collection.children.unlink(coll)

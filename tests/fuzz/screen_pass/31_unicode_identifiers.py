import bpy

größe = 2.0
名前 = "立方体"
bpy.ops.mesh.primitive_cube_add(size=größe)
bpy.context.object.name = 名前
print(名前, größe)

import bpy
import bmesh

mesh = bpy.data.meshes.new("Grid")
bm = bmesh.new()
bmesh.ops.create_grid(bm, x_segments=10, y_segments=10, size=2.0)
for v in bm.verts:
    v.co.z = (v.co.x ** 2 + v.co.y ** 2) * 0.1
bm.to_mesh(mesh)
bm.free()
obj = bpy.data.objects.new("Grid", mesh)
bpy.context.collection.objects.link(obj)

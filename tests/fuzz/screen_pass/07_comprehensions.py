import bpy

meshes = [o for o in bpy.data.objects if o.type == 'MESH']
names = {o.name: len(o.data.vertices) for o in meshes}
heights = sorted((o.location.z for o in meshes), reverse=True)
total = sum(v for v in names.values())
print(f"{len(meshes)} meshes, {total} vertices, highest at {heights[0] if heights else 0:.2f}")

import bpy

for x in range(-3, 4):
    for y in range(-3, 4):
        bpy.ops.mesh.primitive_uv_sphere_add(radius=0.4, location=(x, y, 0))
        sphere = bpy.context.object
        sphere.name = f"Sphere_{x}_{y}"
        sphere.location.x = x * 1.2

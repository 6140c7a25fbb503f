import random
import bpy

random.seed(42)
for i, obj in enumerate(o for o in bpy.data.objects if o.type == 'MESH'):
    mat = bpy.data.materials.new(f"Rand{i}")
    mat.diffuse_color = (random.random(), random.random(), random.uniform(0.2, 1.0), 1)
    obj.active_material = mat

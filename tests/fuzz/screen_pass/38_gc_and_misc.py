import gc
import time
import bpy

start = time.perf_counter()
for _ in range(3):
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=2)
gc.collect()
print(f"took {time.perf_counter() - start:.3f}s")

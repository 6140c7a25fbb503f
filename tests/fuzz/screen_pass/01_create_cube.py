import bpy

bpy.ops.mesh.primitive_cube_add(size=2, location=(0, 0, 1))
cube = bpy.context.active_object
cube.name = "MyCube"
cube.scale = (1.0, 2.0, 0.5)

import bpy

bpy.ops.object.text_add(location=(0, 0, 2))
txt = bpy.context.object
txt.data.body = "Hello from the system"
txt.data.extrude = 0.05
txt.data.align_x = 'CENTER'

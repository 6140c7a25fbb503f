import bpy

obj = bpy.data.objects["Cube"]
fcurve = obj.driver_add("location", 2)
drv = fcurve.driver
drv.type = 'SCRIPTED'
var = drv.variables.new()
var.name = "frame_var"
var.targets[0].id_type = 'SCENE'
var.targets[0].id = bpy.context.scene
var.targets[0].data_path = "frame_current"
drv.expression = "sin(frame_var / 10) * 2"
print(drv.expression)

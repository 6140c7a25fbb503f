import bpy

prefs = bpy.context.preferences
print(prefs.system.memory_cache_limit, prefs.view.show_tooltips)
obj = bpy.data.objects.get("Cube")
if obj:
    obj.location.x += 1
    obj.hide_viewport = False
    print(obj.location.x, obj.dimensions, obj.matrix_world.translation)

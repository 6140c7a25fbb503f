import bpy

obj = bpy.context.active_object
mats = getattr(obj.data, "materials", None)
if hasattr(obj, "modifiers"):
    print(len(obj.modifiers))
values = {"location": (0, 0, 1), "scale": (2, 2, 2)}
for prop, value in values.items():
    setattr(obj, prop, value)
print(obj.path_resolve("location"), mats)

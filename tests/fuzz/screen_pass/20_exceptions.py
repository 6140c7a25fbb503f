import bpy

try:
    obj = bpy.data.objects["Missing"]
except KeyError as e:
    print(f"missing object: {e}")
    obj = None
finally:
    print("done")
if obj is None:
    raise ValueError("no object to work on") from None

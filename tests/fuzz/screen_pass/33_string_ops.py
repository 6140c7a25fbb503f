import bpy

names = [o.name for o in bpy.data.objects]
print(", ".join(names))
summary = "solar system" if "Sun" in names else "no " + "system"
print(summary.upper(), "system" in summary, summary.replace("system", "set"))
key = "open"
print({"open": 1, "exec": 2}.get(key))

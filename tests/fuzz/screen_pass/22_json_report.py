import json
import bpy

report = {
    "objects": [{"name": o.name, "type": o.type, "loc": list(o.location)} for o in bpy.data.objects],
    "frame": bpy.context.scene.frame_current,
}
print(json.dumps(report, indent=2))

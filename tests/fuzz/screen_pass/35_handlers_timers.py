import bpy
from bpy.app.handlers import persistent


@persistent
def on_frame(scene):
    obj = scene.objects.get("Cube")
    if obj:
        obj.rotation_euler.z = scene.frame_current * 0.05


def tick():
    print("tick")
    return None


bpy.app.handlers.frame_change_pre.append(on_frame)
bpy.app.timers.register(tick, first_interval=1.0)

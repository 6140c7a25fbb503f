import bpy
import math

obj = bpy.data.objects["Cube"]
scene = bpy.context.scene
scene.frame_start, scene.frame_end = 1, 120
for frame in range(1, 121, 10):
    obj.location.z = math.sin(frame / 10.0) * 2
    obj.rotation_euler[2] = math.radians(frame * 3)
    obj.keyframe_insert(data_path="location", index=2, frame=frame)
    obj.keyframe_insert(data_path="rotation_euler", frame=frame)

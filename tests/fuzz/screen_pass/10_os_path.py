import os
import bpy

blend_dir = os.path.dirname(bpy.data.filepath)
out_dir = os.path.join(blend_dir, "renders")
os.makedirs(out_dir, exist_ok=True)
for name in sorted(os.listdir(blend_dir)):
    if name.endswith(".png") and os.path.isfile(os.path.join(blend_dir, name)):
        print(name, os.path.getsize(os.path.join(blend_dir, name)))
home = os.environ.get("HOME", "")
print(os.getcwd(), os.sep, home)

import base64
import bpy

raw = base64.b64decode("AAAA/wAA/wA=")
img = bpy.data.images.new("Tiny", width=1, height=2)
img.pixels = [b / 255 for b in raw]
encoded = base64.b64encode(raw).decode("ascii")
print(encoded, img.size[:])

import sys
import bpy

print(sys.version)
print(sys.version_info >= (3, 10), sys.platform, sys.maxsize)
print(bpy.app.version_string, bpy.app.binary_path)

import re
import bpy

pattern = re.compile(r"^Cube(\.\d+)?$")
matches = [o.name for o in bpy.data.objects if pattern.match(o.name)]
print(re.sub(r"\.\d+$", "", "Cube.001"), matches)

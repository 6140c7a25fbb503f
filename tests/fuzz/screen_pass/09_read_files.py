import json
import bpy

path = bpy.path.abspath("//settings.json")
with open(path) as f:
    settings = json.load(f)
with open(path, 'r', encoding='utf-8') as f:
    text = f.read()
with open(path, "rb") as f:
    head = f.read(16)
lines = open(path, mode="r").readlines()
print(settings.get("name"), len(text), head[:4], len(lines))

import bpy

obj = bpy.context.active_object
width = 12
print(f"{obj.name!r:>{width}} at {obj.location.x:.3f}, {obj.location.y:+.2f}")
print(f"{'visible' if obj.visible_get() else 'hidden'}: {{braces}} {len(obj.modifiers)=}")
print(f"""multi
line {obj.type.lower()} {[m.name for m in obj.modifiers]}""")
print(rf"raw {obj.name}\n", F"{1 + 2}", f'{ {"a": 1}["a"] }')

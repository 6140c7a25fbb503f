import bpy

obj = bpy.context.active_object
sub = obj.modifiers.new(name="Subdivision", type='SUBSURF')
sub.levels = 2
sub.render_levels = 3
bevel = obj.modifiers.new("Bevel", 'BEVEL')
bevel.width = 0.02
bevel.segments = 3
bpy.ops.object.shade_smooth()

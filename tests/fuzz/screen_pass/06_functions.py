import bpy


def make_light(name, kind='POINT', energy=1000.0, location=(0, 0, 5)):
    """Create a light object and link it to the scene."""
    data = bpy.data.lights.new(name=name, type=kind)
    data.energy = energy
    light = bpy.data.objects.new(name, data)
    bpy.context.collection.objects.link(light)
    light.location = location
    return light


key = make_light("Key", energy=1500)
fill = make_light("Fill", kind='AREA', energy=400, location=(-4, 2, 3))

import bpy
from operator import attrgetter, itemgetter

objs = list(bpy.data.objects)
by_z = sorted(objs, key=lambda o: o.location.z)
by_name = sorted(objs, key=attrgetter('name'))
pairs = sorted(((o.name, o.location.x) for o in objs), key=itemgetter(1))
print([o.name for o in by_z][:3], by_name[:1], pairs[:1])

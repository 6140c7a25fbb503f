import math
from mathutils import Vector, Matrix, Euler, Quaternion

v = Vector((1.0, 2.0, 3.0))
m = Matrix.Rotation(math.radians(45), 4, 'Z')
rotated = m @ v
e = Euler((0.0, math.pi / 2, 0.0), 'XYZ')
q = e.to_quaternion()
print(rotated.length, q.angle, Quaternion((1, 0, 0, 0)).magnitude)

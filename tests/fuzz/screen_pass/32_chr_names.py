import bpy

for i in range(5):
    letter = chr(65 + i)
    empty = bpy.data.objects.new("Empty_" + letter, None)
    bpy.context.collection.objects.link(empty)
    empty.location = (i, ord(letter) - 65, 0)
print("".join(chr(c) for c in range(97, 102)))

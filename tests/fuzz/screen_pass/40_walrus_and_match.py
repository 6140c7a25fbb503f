import bpy

if (n := len(bpy.data.objects)) > 3:
    print(f"{n} objects")
match bpy.context.mode:
    case 'OBJECT':
        print("object mode")
    case _:
        print("other mode")
values = [*range(3), *[4, 5]]
first, *rest = values
print(first, rest, ...)

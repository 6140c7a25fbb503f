import bpy


class Builder:
    count = 0

    def __init__(self, prefix):
        self.prefix = prefix

    def __repr__(self):
        return f"Builder({self.prefix!r})"

    def build(self, n):
        for i in range(n):
            bpy.ops.mesh.primitive_cone_add(location=(i * 2, 0, 0))
            bpy.context.object.name = f"{self.prefix}{i:03d}"
            Builder.count += 1


class TallBuilder(Builder):
    def __init__(self):
        super().__init__("Tall")


b = TallBuilder()
b.build(3)
print(b, type(b).__name__, b.__class__.__name__, Builder.count)

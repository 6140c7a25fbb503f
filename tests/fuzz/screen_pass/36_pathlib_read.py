from pathlib import Path
import bpy

tex = Path(bpy.data.filepath).parent / "textures" / "wood.png"
if tex.exists():
    img = bpy.data.images.load(str(tex))
    print(img.name, tex.suffix, tex.stem)
cfg = Path(bpy.path.abspath("//notes.txt"))
if cfg.is_file():
    print(cfg.read_text()[:80])
    with cfg.open() as f:
        print(f.readline())

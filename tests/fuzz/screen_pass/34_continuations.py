import bpy

scene = bpy.context.scene
total_frames = scene.frame_end - \
    scene.frame_start + 1
settings = dict(
    samples=128,   # render samples
    denoise=True,  # use the denoiser
)
scene.cycles.samples = settings["samples"]; scene.cycles.use_denoising = settings["denoise"]
print(total_frames,
      settings)

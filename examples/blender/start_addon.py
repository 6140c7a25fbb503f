"""Install and enable the public blender-mcp add-on, and start its server.

Design note. For the README's walkthrough ("Use with an MCP server"): run
Blender with a GUI (under xvfb-run on a machine without a display; the
add-on refuses to start its server under `blender -b`, since its commands run
from bpy.app.timers, which never fire there) and pass this file with
--python. It installs ADDON (default ./addon.py, the add-on's single file)
into the user's add-on directory, enables it (newer add-on versions then
start the server on their own, on port 9876), and makes sure the server
runs on PORT (default 9876): an auto-started server on another port is
stopped and started again on PORT through the add-on's own operator.
Nothing here changes the add-on; nothing is saved to the user preferences.

  xvfb-run -a blender --factory-startup --python examples/blender/start_addon.py \\
      -- --addon /path/to/addon.py --port 9876
"""
import argparse
import os
import sys

import bpy

argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
ap = argparse.ArgumentParser(prog="start_addon.py")
ap.add_argument("--addon", default="addon.py", help="the add-on's addon.py")
ap.add_argument("--port", type=int, default=9876)
args = ap.parse_args(argv)

if bpy.app.background:
    sys.exit("start_addon.py: the add-on's server needs Blender's GUI loop; "
             "run under xvfb-run without -b")

path = os.path.abspath(args.addon)
module = os.path.splitext(os.path.basename(path))[0]
bpy.ops.preferences.addon_install(filepath=path, overwrite=True)
bpy.ops.preferences.addon_enable(module=module)

server = getattr(bpy.types, "blendermcp_server", None)
if server is not None and (not server.running or server.port != args.port):
    server.stop()
    del bpy.types.blendermcp_server
    server = None
if server is None:
    bpy.context.scene.blendermcp_port = args.port
    bpy.ops.blendermcp.start_server()
    server = bpy.types.blendermcp_server
print("start_addon: blender-mcp add-on %s, server running=%s on port %d, blender pid %d"
      % (module, server.running, server.port, os.getpid()), flush=True)

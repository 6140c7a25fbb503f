"""The project's own add-on-protocol server, run inside a real Blender.

Design note. This is a stand-in for the blender-mcp add-on's socket server,
written from the facts the add-on teaches (../shared/SPEC.md, "Backend
protocol"), not from its code, so that the tests and benchmarks can put the
broker in front of a real Blender without the add-on's network-bound
dependencies (requests, Poly Haven, ...) or its GUI:

- TCP host:port (127.0.0.1, --port N; 0 picks a free port). One thread
  accepts; one thread per connection reads. A request is one JSON object
  with no delimiter, framed by completeness: an incremental scanner keeps
  depth/string/escape state across reads, so each byte is looked at once and
  two requests in one write are two requests (the add-on would hang on
  "Extra data"). One request at a time per connection: the next frame is not
  looked at before the answer to this one is sent, in one sendall, as
  json.dumps() writes it (ASCII, ", " and ": " separators: the add-on's
  bytes). Bytes that are not JSON get an error answer and the connection is
  closed (no delimiter to resume at).
- Answers: {"status": "success", "result": ...} or {"status": "error",
  "message": ...}; "Unknown command type: X", "Object not found: X",
  "Code execution error: ...", handler exceptions as str(e) - the add-on's
  messages.
- bpy work runs on Blender's main thread only. The connection thread puts
  (command, slot) on a queue and waits for the slot. Who drains the queue:
    --mode loop    (the default under `blender -b`): timers never fire in
                   background mode, so the script's main body loops on the
                   queue until `server_quit` and then returns, and Blender
                   exits.
    --mode timers  (the default with a GUI, e.g. under xvfb-run): one
                   persistent bpy.app.timers callback, registered from the
                   main thread, drains the queue every millisecond - the
                   add-on's way (it registers one timer per command, from
                   its socket thread; ours never calls into bpy off the
                   main thread).
- Commands on the main thread: get_scene_info, get_object_info(name),
  execute_code(code) (stdout captured: {"executed": true, "result": out}),
  create_object(type, name, location, rotation, scale) (the earlier add-on
  versions' command and answer). Side channel, answered on the connection
  thread without touching bpy: server_stats (requests received by type,
  connections) and server_quit.
- Ready line on stdout, once commands will execute:
  `addon_server: ready host=127.0.0.1 port=N pid=P mode=M blender=3.4.1`.

Usage: blender -b --factory-startup --python tests/blender/addon_server.py -- --port N
       xvfb-run -a blender --factory-startup --python tests/blender/addon_server.py -- --port N
"""
import argparse
import io
import json
import os
import queue
import socket
import sys
import threading
import traceback
from contextlib import redirect_stdout

import bpy
import mathutils

MAX_REQUEST_BYTES = 16 << 20


# ---------------------------------------------------------------- commands
# Run on Blender's main thread only.

def _aabb(obj):
    corners = [obj.matrix_world @ mathutils.Vector(c) for c in obj.bound_box]
    lo = mathutils.Vector(map(min, zip(*corners)))
    hi = mathutils.Vector(map(max, zip(*corners)))
    return [[*lo], [*hi]]


def get_scene_info():
    try:
        scene = bpy.context.scene
        info = {
            "name": scene.name,
            "object_count": len(scene.objects),
            "objects": [],
            "materials_count": len(bpy.data.materials),
        }
        for i, obj in enumerate(scene.objects):
            if i >= 10:
                break
            info["objects"].append({
                "name": obj.name,
                "type": obj.type,
                "location": [round(float(obj.location.x), 2),
                             round(float(obj.location.y), 2),
                             round(float(obj.location.z), 2)],
            })
        return info
    except Exception as e:  # the add-on reports this inside a success
        return {"error": str(e)}


def get_object_info(name):
    obj = bpy.data.objects.get(name)
    if not obj:
        raise ValueError(f"Object not found: {name}")
    info = {
        "name": obj.name,
        "type": obj.type,
        "location": [obj.location.x, obj.location.y, obj.location.z],
        "rotation": [obj.rotation_euler.x, obj.rotation_euler.y, obj.rotation_euler.z],
        "scale": [obj.scale.x, obj.scale.y, obj.scale.z],
        "visible": obj.visible_get(),
        "materials": [],
    }
    if obj.type == "MESH":
        info["world_bounding_box"] = _aabb(obj)
    for slot in obj.material_slots:
        if slot.material:
            info["materials"].append(slot.material.name)
    if obj.type == "MESH" and obj.data:
        mesh = obj.data
        info["mesh"] = {"vertices": len(mesh.vertices), "edges": len(mesh.edges),
                        "polygons": len(mesh.polygons)}
    return info


def execute_code(code):
    try:
        namespace = {"bpy": bpy}
        out = io.StringIO()
        with redirect_stdout(out):
            exec(code, namespace)
        return {"executed": True, "result": out.getvalue()}
    except Exception as e:
        raise Exception(f"Code execution error: {str(e)}")


_ADD = {
    "CUBE": lambda kw: bpy.ops.mesh.primitive_cube_add(**kw),
    "SPHERE": lambda kw: bpy.ops.mesh.primitive_uv_sphere_add(**kw),
    "CYLINDER": lambda kw: bpy.ops.mesh.primitive_cylinder_add(**kw),
    "PLANE": lambda kw: bpy.ops.mesh.primitive_plane_add(**kw),
    "CONE": lambda kw: bpy.ops.mesh.primitive_cone_add(**kw),
    "EMPTY": lambda kw: bpy.ops.object.empty_add(**kw),
    "LIGHT": lambda kw: bpy.ops.object.light_add(type="POINT", **kw),
}


def create_object(type="CUBE", name=None, location=(0, 0, 0), rotation=(0, 0, 0),
                  scale=(1, 1, 1)):
    # The earlier add-on versions' command: failures inside a success reply.
    try:
        add = _ADD.get(type)
        if add is None:
            raise ValueError(f"Unsupported object type: {type}")
        if bpy.context.view_layer.objects.active is not None:
            bpy.ops.object.select_all(action="DESELECT")
        add({"location": location, "rotation": rotation, "scale": scale})
        bpy.context.view_layer.update()
        obj = bpy.context.view_layer.objects.active
        if obj is None:
            raise RuntimeError("Failed to create object - no active object")
        if name:
            obj.name = name
            if obj.data:
                obj.data.name = name
        if type == "PLANE":
            obj.scale = scale
        result = {
            "name": obj.name,
            "type": obj.type,
            "location": [obj.location.x, obj.location.y, obj.location.z],
            "rotation": [obj.rotation_euler.x, obj.rotation_euler.y, obj.rotation_euler.z],
            "scale": [obj.scale.x, obj.scale.y, obj.scale.z],
        }
        if obj.type == "MESH":
            result["world_bounding_box"] = _aabb(obj)
        return result
    except Exception as e:
        return {"error": str(e)}


HANDLERS = {
    "get_scene_info": get_scene_info,
    "get_object_info": get_object_info,
    "execute_code": execute_code,
    "create_object": create_object,
}


def execute(command):
    """One command, on the main thread: the add-on's answer dict."""
    typ = command.get("type")
    params = command.get("params", {})
    handler = HANDLERS.get(typ)
    if handler is None:
        return {"status": "error", "message": f"Unknown command type: {typ}"}
    try:
        if not isinstance(params, dict):
            raise TypeError("params must be an object")
        return {"status": "success", "result": handler(**params)}
    except Exception as e:
        return {"status": "error", "message": str(e)}


# ---------------------------------------------------------------- framing

class Scanner:
    """JSON value completeness over a byte stream: feed() returns the end
    offsets of every complete top-level value, scanning each byte once.
    Values must be objects or arrays (a request is an object); anything else
    at the top level is an error, reported as ValueError."""

    def __init__(self):
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.pos = 0  # bytes of buf already scanned

    def feed(self, buf):
        ends = []
        i, n = self.pos, len(buf)
        depth, in_str, esc = self.depth, self.in_str, self.esc
        while i < n:
            c = buf[i]
            if in_str:
                if esc:
                    esc = False
                elif c == 0x5C:  # backslash
                    esc = True
                elif c == 0x22:
                    in_str = False
            elif c == 0x22:
                if depth == 0:
                    raise ValueError("a request must be a JSON object")
                in_str = True
            elif c in (0x7B, 0x5B):  # { [
                depth += 1
            elif c in (0x7D, 0x5D):  # } ]
                if depth == 0:
                    raise ValueError("unbalanced '%s'" % chr(c))
                depth -= 1
                if depth == 0:
                    ends.append(i + 1)
            elif depth == 0 and c not in (0x20, 0x09, 0x0A, 0x0D):
                raise ValueError("a request must be a JSON object")
            i += 1
        self.pos, self.depth, self.in_str, self.esc = i, depth, in_str, esc
        return ends

    def consumed(self, k):
        """The first k bytes were taken out of the buffer."""
        self.pos -= k


# ---------------------------------------------------------------- server

class Server:
    def __init__(self, host, port, mode):
        self.mode = mode
        self.queue = queue.Queue()
        self.quit = threading.Event()
        self.lock = threading.Lock()
        self.received = 0
        self.by_type = {}
        self.connections = 0
        self.open_connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.host, self.port = self.sock.getsockname()[:2]

    def start(self):
        threading.Thread(target=self._accept_loop, name="accept", daemon=True).start()

    def ready_line(self):
        print("addon_server: ready host=%s port=%d pid=%d mode=%s blender=%s"
              % (self.host, self.port, os.getpid(), self.mode, bpy.app.version_string),
              flush=True)

    def _accept_loop(self):
        while not self.quit.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                if self.quit.is_set():
                    return
                continue
            with self.lock:
                self.connections += 1
                self.open_connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        scan = Scanner()
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                if len(buf) > MAX_REQUEST_BYTES:
                    self._send(conn, {"status": "error", "message": "request too large"})
                    return
                try:
                    ends = scan.feed(buf)
                except ValueError as e:
                    self._send(conn, {"status": "error", "message": "Invalid request: %s" % e})
                    return
                start = 0
                for end in ends:
                    frame = bytes(buf[start:end])
                    start = end
                    if not self._one(conn, frame):
                        return
                if start:
                    del buf[:start]
                    scan.consumed(start)
        except OSError:
            return
        finally:
            with self.lock:
                self.open_connections -= 1
            try:
                conn.close()
            except OSError:
                pass

    def _one(self, conn, frame):
        """Answer one framed request; False closes the connection."""
        try:
            command = json.loads(frame.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            self._send(conn, {"status": "error", "message": "Invalid JSON: %s" % e})
            return False
        if not isinstance(command, dict):
            return self._send(conn, {"status": "error",
                                     "message": "a request must be a JSON object"})
        typ = command.get("type")
        if typ == "server_stats":
            with self.lock:
                result = {"received": self.received, "by_type": dict(self.by_type),
                          "connections": self.connections,
                          "open_connections": self.open_connections,
                          "mode": self.mode, "pid": os.getpid()}
            return self._send(conn, {"status": "success", "result": result})
        if typ == "server_quit":
            self._send(conn, {"status": "success", "result": {"quitting": True}})
            self.stop()
            return False
        with self.lock:
            self.received += 1
            key = typ if isinstance(typ, str) else repr(typ)
            self.by_type[key] = self.by_type.get(key, 0) + 1
        slot = {"done": threading.Event(), "response": None}
        self.queue.put((command, slot))
        slot["done"].wait()
        return self._send(conn, slot["response"])

    @staticmethod
    def _send(conn, response):
        try:
            data = json.dumps(response)
        except Exception as e:  # a result json cannot write
            data = json.dumps({"status": "error", "message": str(e)})
        try:
            conn.sendall(data.encode("utf-8"))
            return True
        except OSError:
            return False

    def run_pending(self, block_s):
        """Main thread: execute queued commands; wait up to block_s for the first."""
        try:
            item = self.queue.get(timeout=block_s) if block_s else self.queue.get_nowait()
        except queue.Empty:
            return
        while True:
            command, slot = item
            try:
                slot["response"] = execute(command)
            except Exception as e:  # never leave a connection waiting
                traceback.print_exc()
                slot["response"] = {"status": "error", "message": str(e)}
            slot["done"].set()
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return

    def stop(self):
        self.quit.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def main():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    ap = argparse.ArgumentParser(prog="addon_server.py")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9876)
    ap.add_argument("--mode", choices=("auto", "loop", "timers"), default="auto",
                    help="auto: loop under blender -b, timers with a GUI")
    args = ap.parse_args(argv)
    mode = args.mode
    if mode == "auto":
        mode = "loop" if bpy.app.background else "timers"
    if mode == "timers" and bpy.app.background:
        sys.exit("addon_server.py: --mode timers needs a GUI (timers never fire under blender -b)")

    srv = Server(args.host, args.port, mode)
    srv.start()
    if mode == "loop":
        srv.ready_line()
        while not srv.quit.is_set():
            srv.run_pending(0.05)
        return  # the script ends; blender -b then exits

    state = {"announced": False}

    def pump():
        if not state["announced"]:  # the event loop runs: commands will execute
            state["announced"] = True
            srv.ready_line()
        if srv.quit.is_set():
            bpy.ops.wm.quit_blender()
            return None
        srv.run_pending(0)
        return 0.001

    bpy.app.timers.register(pump, first_interval=0.0, persistent=True)


main()

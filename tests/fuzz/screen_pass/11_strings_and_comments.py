# This script never calls os.system("rm -rf /") or eval(input()).
# subprocess.run(["ls"])  <- only a comment
print("os.system is not called here")
print('we do not import subprocess')
message = "use exec() and eval() carefully; open(path, 'w') writes"
note = """
Docstring mentioning __import__-free code and the word system.
"""
print(message, note)
print("system")

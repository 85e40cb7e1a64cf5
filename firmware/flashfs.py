# Files on the node's flash (or, in the unix port, a directory standing in for it), each
# replaced atomically: written beside the target, then renamed over it.
import os


class Flash:
    def __init__(self, root):
        self.root = root.rstrip("/")
        if self.root:
            try:
                os.mkdir(self.root)
            except OSError:
                pass  # exists

    def read(self, name):
        try:
            with open(self.root + "/" + name) as f:
                return f.read()
        except OSError:
            return None

    def write(self, name, text):
        tmp = self.root + "/" + name + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.root + "/" + name)  # littlefs and POSIX both rename atomically

import os, time, threading
def tl(what, key=""):
    with open("/tmp/s13/timeline.log", "a") as f:
        f.write(f"{time.time():.4f} {os.getpid()} {threading.current_thread().name} {key} {what}\n")

"""Programs in every shipped language for the runtime tests: one of each kind a test needs.

Each language gives a hello world, a runtime error (a crash or an uncaught error), an endless loop,
a memory hog (allocates and touches memory until the kernel stops it), and, for a compiled
language, code its compiler refuses. ``RUNTIME_ERROR_EXIT`` is how the runtime error ends.
"""

from __future__ import annotations

HELLO = "hello, sandbox"

PROGRAMS: dict[str, dict[str, str]] = {
    "python-scientific": {
        "hello": f'print("{HELLO}")\n',
        "runtime_error": "raise SystemExit(3)\n",
        "loop": "while True:\n    pass\n",
        "memory": "import numpy\nblocks = []\nwhile True:\n    blocks.append(numpy.ones(1 << 20))\n",
    },
    "c": {
        "hello": f'#include <stdio.h>\nint main(void) {{ puts("{HELLO}"); return 0; }}\n',
        "compile_error": "int main(void) { return undeclared_name; }\n",
        "runtime_error": "int main(void) { volatile int *p = 0; return *p; }\n",
        "loop": "int main(void) { volatile unsigned n = 0; for (;;) n++; }\n",
        "memory": (
            "#include <stdlib.h>\n#include <string.h>\n"
            "int main(void) { for (;;) { char *p = malloc(1 << 20); if (!p) return 9; memset(p, 1, 1 << 20); } }\n"
        ),
    },
    "cpp": {
        "hello": f'#include <iostream>\nint main() {{ std::cout << "{HELLO}" << std::endl; }}\n',
        "compile_error": "int main() { return undeclared_name; }\n",
        "runtime_error": '#include <stdexcept>\nint main() { throw std::runtime_error("boom"); }\n',
        "loop": "int main() { volatile unsigned n = 0; for (;;) n++; }\n",
        "memory": (
            "#include <vector>\nint main() { std::vector<std::vector<char>> v; for (;;) v.emplace_back(1 << 20, 1); }\n"
        ),
    },
    "java": {
        "hello": f'public class Main {{ public static void main(String[] a) {{ System.out.println("{HELLO}"); }} }}\n',
        "compile_error": "public class Main { public static void main(String[] a) { int x = undeclared; } }\n",
        "runtime_error": (
            'public class Main { public static void main(String[] a) { throw new RuntimeException("boom"); } }\n'
        ),
        "loop": "public class Main { public static void main(String[] a) { long n = 0; while (true) n++; } }\n",
        "memory": (
            "import java.nio.ByteBuffer; import java.util.ArrayList;\n"
            "public class Main { public static void main(String[] a) { ArrayList<ByteBuffer> l = new ArrayList<>();"
            " while (true) { ByteBuffer b = ByteBuffer.allocateDirect(1 << 20);"
            " for (int i = 0; i < (1 << 20); i += 4096) b.put(i, (byte) 1); l.add(b); } } }\n"
        ),
    },
    "javascript": {
        "hello": f'console.log("{HELLO}");\n',
        "runtime_error": 'throw new Error("boom");\n',
        "loop": "for (;;) {}\n",
        "memory": "const blocks = [];\nfor (;;) blocks.push(Buffer.alloc(1 << 20, 1));\n",
    },
    "go": {
        "hello": f'package main\n\nimport "fmt"\n\nfunc main() {{ fmt.Println("{HELLO}") }}\n',
        "compile_error": "package main\n\nfunc main() { undeclared() }\n",
        "runtime_error": 'package main\n\nfunc main() { panic("boom") }\n',
        "loop": "package main\n\nfunc main() {\n\tn := 0\n\tfor {\n\t\tn++\n\t}\n}\n",
        "memory": (
            "package main\n\nfunc main() {\n\tvar blocks [][]byte\n\tfor {\n\t\tb := make([]byte, 1<<20)\n"
            "\t\tfor i := range b {\n\t\t\tb[i] = 1\n\t\t}\n\t\tblocks = append(blocks, b)\n\t}\n}\n"
        ),
    },
    "rust": {
        "hello": f'fn main() {{ println!("{HELLO}"); }}\n',
        "compile_error": "fn main() { undeclared(); }\n",
        "runtime_error": 'fn main() { panic!("boom"); }\n',
        "loop": 'fn main() { let mut n: u32 = 1; loop { n = n.wrapping_mul(3); if n == 0 { println!("never"); } } }\n',
        "memory": "fn main() { let mut v: Vec<Vec<u8>> = Vec::new(); loop { v.push(vec![1u8; 1 << 20]); } }\n",
    },
}

# How each language's runtime error ends: (exit code, signal) as the runner reports them.
RUNTIME_ERROR_EXIT: dict[str, tuple[int, int | None]] = {
    "python-scientific": (3, None),
    "c": (139, 11),
    "cpp": (134, 6),
    "java": (1, None),
    "javascript": (1, None),
    "go": (2, None),
    "rust": (101, None),
}

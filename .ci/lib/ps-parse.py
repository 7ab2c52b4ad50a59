# Syntax check of PowerShell files with the tree-sitter PowerShell grammar
# (PowerShell itself is not installable here). Exit 1 on any ERROR/MISSING node.
import sys
import tree_sitter, tree_sitter_powershell as tsp
lang = tree_sitter.Language(tsp.language())
parser = tree_sitter.Parser(lang)
bad = 0
for f in sys.argv[1:]:
    tree = parser.parse(open(f, 'rb').read())
    errs = []
    def walk(n):
        if n.type == 'ERROR' or n.is_missing:
            errs.append(n)
        for c in n.children: walk(c)
    walk(tree.root_node)
    for e in errs[:10]:
        print(f"{f}:{e.start_point[0]+1}:{e.start_point[1]+1}: syntax error near {e.text[:60]!r}")
    bad += bool(errs)
    print(f"{f}: {'FAIL' if errs else 'ok'}")
sys.exit(1 if bad else 0)

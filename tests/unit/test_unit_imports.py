"""The package's import graph: the command line sits on top, nothing below imports it back."""
import ast
from pathlib import Path

import redismedian

PACKAGE = Path(redismedian.__file__).parent


def _is_main_block(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":``, the block ``python -m redismedian.<part>`` runs."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    left, right = node.test.left, node.test.comparators
    return (isinstance(left, ast.Name) and left.id == "__name__" and len(right) == 1
            and isinstance(right[0], ast.Constant) and right[0].value == "__main__")


def _imports_of_cli(tree: ast.Module) -> list[int]:
    """Lines importing redismedian.cli anywhere (in functions too), but for the ``__main__`` block."""
    skip = {id(n) for top in tree.body if _is_main_block(top) for n in ast.walk(top)}
    lines = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            relative_cli = node.level == 1 and (node.module == "cli" or
                                                (node.module is None and any(a.name == "cli" for a in node.names)))
            if relative_cli or node.module == "redismedian.cli":
                lines.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name == "redismedian.cli" for a in node.names):
            lines.append(node.lineno)
    return lines


def test_no_module_imports_the_command_line_back():
    # cli.py imports the components; a component importing cli (even inside a function) closed a
    # circle.  `python -m redismedian.<part>` reaches cli from the module's __main__ block only.
    offenders = {p.name: lines for p in sorted(PACKAGE.glob("*.py")) if p.name != "__main__.py"
                 if (lines := _imports_of_cli(ast.parse(p.read_text(), str(p))))}
    assert offenders == {}


def test_each_component_module_runs_its_command_from_its_main_block():
    for part in ("generator", "strategy", "trader"):
        tree = ast.parse((PACKAGE / f"{part}.py").read_text())
        blocks = [n for n in tree.body if _is_main_block(n)]
        assert len(blocks) == 1, part
        assert f"run_alone({part!r})" in ast.unparse(blocks[0]), part

package designdoc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const root = "../.."

// decls is every name the module's production code declares: functions and
// types by name, methods as "Type.Method" and by name, struct fields as
// "Type.Field", and each of them
// also as "pkg.Name".
func decls(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		pkg := f.Name.Name
		add := func(n string) { names[n] = true; names[pkg+"."+n] = true }
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				add(d.Name.Name)
				if d.Recv != nil && len(d.Recv.List) == 1 {
					add(recvType(d.Recv.List[0].Type) + "." + d.Name.Name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						add(s.Name.Name)
						if st, ok := s.Type.(*ast.StructType); ok {
							for _, f := range st.Fields.List {
								for _, n := range f.Names {
									add(s.Name.Name + "." + n.Name) // a field, as Type.Field
								}
							}
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							add(n.Name)
						}
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func recvType(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.StarExpr:
		return recvType(e.X)
	case *ast.IndexExpr:
		return recvType(e.X)
	case *ast.IndexListExpr:
		return recvType(e.X)
	case *ast.Ident:
		return e.Name
	}
	return ""
}

// section returns the text of the "## title" section of DESIGN.md.
func section(t *testing.T, title string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "DESIGN.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, "\n## "+title+"\n")
	if i < 0 {
		t.Fatalf("DESIGN.md has no section %q", title)
	}
	s = s[i+len(title)+5:]
	if j := strings.Index(s, "\n#"); j >= 0 {
		s = s[:j]
	}
	return s
}

var (
	code    = regexp.MustCompile("`([^`]+)`")
	envName = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)+$`)
	ident   = regexp.MustCompile(`^\(?\*?([A-Za-z_][A-Za-z0-9_]*)\)?(\.[A-Za-z_][A-Za-z0-9_]*)*$`)
)

// TestLifeOfARecordNamesExist: every function, method or type that "Life of
// a record" names in backquotes is declared in the module (as `Name`,
// `Type.Method`, `(*Type).Method` or `pkg.Name`).
func TestLifeOfARecordNamesExist(t *testing.T) {
	names := decls(t)
	text := section(t, "Life of a record")
	n := 0
	for _, m := range code.FindAllStringSubmatch(text, -1) {
		name := strings.TrimSuffix(m[1], "()")
		if !ident.MatchString(name) || envName.MatchString(name) {
			continue // a value, a path, a variable: not a name
		}
		name = strings.NewReplacer("(*", "", "(", "", ")", "").Replace(name)
		n++
		if !names[name] {
			t.Errorf("DESIGN.md \"Life of a record\" names %q, which the code does not declare", m[1])
		}
	}
	if n < 15 {
		t.Errorf("\"Life of a record\" names %d functions; want at least one per stop (15)", n)
	}
}

// TestFileMapPathsExist: every file or directory the File map's first
// column names exists.
func TestFileMapPathsExist(t *testing.T) {
	text := section(t, "File map")
	n := 0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line, "|", 3)[1]
		var dir string // of the last file named: `consumer/fetcher.go`, `txn.go`
		for _, m := range code.FindAllStringSubmatch(first, -1) {
			p := m[1]
			candidates := []string{p, filepath.Join("internal", p)}
			if !strings.Contains(p, "/") {
				candidates = append(candidates, filepath.Join(dir, p))
			} else if strings.HasSuffix(p, ".go") {
				dir = filepath.Dir(p)
			}
			n++
			found := false
			for _, c := range candidates {
				if _, err := os.Stat(filepath.Join(root, c)); err == nil {
					found = true
					break
				}
			}
			if !found {
				t.Errorf("DESIGN.md File map names %q, which does not exist (looked for %v)", m[1], candidates)
			}
		}
	}
	if n < 20 {
		t.Errorf("File map names %d paths; the parser found too few", n)
	}
}

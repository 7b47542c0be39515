// Package manifest reads Kubernetes YAML into documents that remember where
// they came from (file, document index, line), so every later gate can point
// a reviewer at the exact object that failed.
package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// Document is one YAML document of a file or of a rendered stream.
type Document struct {
	// File is the path of the source file, relative to the repository root
	// when known, as given otherwise.
	File string
	// Index is the 0-based position of the document inside File, counting
	// documents with content (comment-only documents are not counted).
	Index int
	// Line is the 1-based line in File where the document's content starts.
	Line int
	// Object is the document decoded the way Kubernetes decodes YAML
	// (sigs.k8s.io/yaml), so `yes`/`on` and numbers mean what kubectl thinks.
	Object map[string]any
	// JSON is the document as JSON, the form strict decoding works on.
	JSON []byte
}

// APIVersion returns the document's apiVersion.
func (d Document) APIVersion() string { return str(d.Object["apiVersion"]) }

// Kind returns the document's kind.
func (d Document) Kind() string { return str(d.Object["kind"]) }

// Name returns metadata.name.
func (d Document) Name() string { return str(meta(d.Object)["name"]) }

// Namespace returns metadata.namespace.
func (d Document) Namespace() string { return str(meta(d.Object)["namespace"]) }

// Annotations returns metadata.annotations as strings.
func (d Document) Annotations() map[string]string {
	out := map[string]string{}
	if a, ok := meta(d.Object)["annotations"].(map[string]any); ok {
		for k, v := range a {
			out[k] = str(v)
		}
	}
	return out
}

// Position is "file:index", the way findings name a document.
func (d Document) Position() string { return fmt.Sprintf("%s:%d", d.File, d.Index) }

// ID names the object as kind/namespace/name (namespace omitted when empty).
func (d Document) ID() string {
	if ns := d.Namespace(); ns != "" {
		return d.Kind() + "/" + ns + "/" + d.Name()
	}
	return d.Kind() + "/" + d.Name()
}

func meta(o map[string]any) map[string]any {
	m, _ := o["metadata"].(map[string]any)
	return m
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// Chunk is the raw text of one YAML document and the line it starts on.
type Chunk struct {
	Line int
	Data []byte
}

// Split cuts a multi-document YAML stream at its `---` separators. Documents
// holding only comments or whitespace are dropped, as kubectl drops them.
// Splitting by hand (rather than through a YAML decoder) keeps the exact line
// each document starts on.
func Split(data []byte) []Chunk {
	var (
		chunks []Chunk
		cur    bytes.Buffer
		line   = 0
		first  = 0 // first line of content in cur
	)
	flush := func() {
		if first != 0 {
			chunks = append(chunks, Chunk{Line: first, Data: append([]byte(nil), cur.Bytes()...)})
		}
		cur.Reset()
		first = 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 64<<20) // long lines (embedded JSON) are fine; no big upfront buffer
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.HasPrefix(text, "---") && (len(text) == 3 || text[3] == ' ' || text[3] == '\t') {
			flush()
			// "--- foo" carries content on the separator line itself.
			if rest := strings.TrimSpace(text[3:]); rest != "" && !strings.HasPrefix(rest, "#") {
				first = line
				cur.WriteString(rest + "\n")
			}
			continue
		}
		if text == "..." {
			flush()
			continue
		}
		trimmed := strings.TrimSpace(text)
		if first == 0 && trimmed != "" && !strings.HasPrefix(trimmed, "#") {
			first = line
		}
		if first == 0 {
			// Keep line numbers of YAML errors honest relative to the chunk.
			continue
		}
		cur.WriteString(text)
		cur.WriteByte('\n')
	}
	flush()
	return chunks
}

// ParseError is a document that is not valid YAML or not a mapping.
type ParseError struct {
	File  string
	Index int
	Line  int
	Err   error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s:%d (line %d): %v", e.File, e.Index, e.Line, e.Err)
}

func (e *ParseError) Unwrap() error { return e.Err }

// Parse decodes every document of a YAML stream. Documents that fail to
// parse are returned as *ParseError values and skipped, so one bad document
// does not hide the findings of its neighbours.
func Parse(file string, data []byte) ([]Document, []*ParseError) {
	var docs []Document
	var errs []*ParseError
	for i, c := range Split(data) {
		d, err := parseChunk(file, i, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if d.Object == nil {
			continue
		}
		docs = append(docs, d)
	}
	return docs, errs
}

func parseChunk(file string, index int, c Chunk) (Document, *ParseError) {
	js, err := yaml.YAMLToJSONStrict(c.Data)
	if err != nil {
		return Document{}, &ParseError{File: file, Index: index, Line: c.Line, Err: fmt.Errorf("invalid YAML: %w", err)}
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return Document{File: file, Index: index, Line: c.Line}, nil
	}
	var obj map[string]any
	if err := json.Unmarshal(js, &obj); err != nil {
		return Document{}, &ParseError{File: file, Index: index, Line: c.Line, Err: fmt.Errorf("document is not a mapping: %w", err)}
	}
	return Document{File: file, Index: index, Line: c.Line, Object: obj, JSON: js}, nil
}

// FromObject builds a document from an already decoded object (for example
// one rendered by kustomize). The object is round-tripped through JSON so
// that every document holds the same value types whatever decoded it.
func FromObject(file string, index, line int, obj map[string]any) (Document, error) {
	js, err := json.Marshal(obj)
	if err != nil {
		return Document{}, fmt.Errorf("%s:%d: encode: %w", file, index, err)
	}
	var norm map[string]any
	if err := json.Unmarshal(js, &norm); err != nil {
		return Document{}, fmt.Errorf("%s:%d: decode: %w", file, index, err)
	}
	return Document{File: file, Index: index, Line: line, Object: norm, JSON: js}, nil
}

// IsYAML reports whether a file name looks like YAML.
func IsYAML(name string) bool {
	ext := strings.ToLower(filepath.Ext(name))
	return ext == ".yaml" || ext == ".yml"
}

// Set is what ReadPaths found: documents, the files they came from, and the
// documents that could not be parsed.
type Set struct {
	Docs     []Document
	Files    []string
	Problems []*ParseError
}

// ReadPaths reads YAML files and every YAML file below the given folders, in
// a stable order. File names are made relative to base when base is not
// empty and the file lies below it.
func ReadPaths(base string, paths []string) (Set, error) {
	var files []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return Set{}, fmt.Errorf("read %s: %w", p, err)
		}
		if !info.IsDir() {
			files = append(files, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && strings.HasPrefix(d.Name(), ".") && path != p {
				return filepath.SkipDir
			}
			if !d.IsDir() && IsYAML(path) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return Set{}, fmt.Errorf("walk %s: %w", p, err)
		}
	}
	sort.Strings(files)
	var set Set
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return Set{}, fmt.Errorf("read %s: %w", f, err)
		}
		name := f
		if base != "" {
			if rel, err := filepath.Rel(base, f); err == nil && !strings.HasPrefix(rel, "..") {
				name = filepath.ToSlash(rel)
			}
		}
		set.Files = append(set.Files, name)
		docs, errs := Parse(name, data)
		set.Docs = append(set.Docs, docs...)
		set.Problems = append(set.Problems, errs...)
	}
	return set, nil
}

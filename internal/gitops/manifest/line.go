package manifest

import (
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// FieldLine finds the line of a field path such as
// "spec.template.spec.containers[0].image" inside document index of src, so
// that an annotation lands on the misspelt line rather than on the top of
// the object. It reports false when the path is not in the source (a patch
// may have added it) or cannot be followed.
func FieldLine(src []byte, index int, path string) (int, bool) {
	chunks := Split(src)
	if index < 0 || index >= len(chunks) {
		return 0, false
	}
	c := chunks[index]
	var root yaml.Node
	if err := yaml.Unmarshal(c.Data, &root); err != nil || len(root.Content) == 0 {
		return 0, false
	}
	n := root.Content[0]
	line := 0
	for _, step := range splitPath(path) {
		switch {
		case step.key != "":
			if n.Kind != yaml.MappingNode {
				return 0, false
			}
			found := false
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == step.key {
					line = n.Content[i].Line
					n = n.Content[i+1]
					found = true
					break
				}
			}
			if !found {
				return 0, false
			}
		default:
			if n.Kind != yaml.SequenceNode || step.index >= len(n.Content) {
				return 0, false
			}
			n = n.Content[step.index]
			line = n.Line
		}
	}
	if line == 0 {
		return 0, false
	}
	return c.Line + line - 1, true
}

type pathStep struct {
	key   string
	index int
}

var indexRE = regexp.MustCompile(`\[(\d+)\]`)

func splitPath(path string) []pathStep {
	var steps []pathStep
	for _, part := range strings.Split(path, ".") {
		key := part
		var idx []int
		if i := strings.IndexByte(part, '['); i >= 0 {
			key = part[:i]
			for _, m := range indexRE.FindAllStringSubmatch(part[i:], -1) {
				n, _ := strconv.Atoi(m[1])
				idx = append(idx, n)
			}
		}
		if key != "" {
			steps = append(steps, pathStep{key: key})
		}
		for _, n := range idx {
			steps = append(steps, pathStep{index: n})
		}
	}
	return steps
}

// fieldRE pulls field paths out of decoder and schema messages.
var fieldRE = regexp.MustCompile(`(?:unknown field|duplicate field) "([^"]+)"`)

// ErrorFieldPath returns the field path an error message names, if any.
func ErrorFieldPath(msg string) (string, bool) {
	m := fieldRE.FindStringSubmatch(msg)
	if m == nil {
		return "", false
	}
	return m[1], true
}

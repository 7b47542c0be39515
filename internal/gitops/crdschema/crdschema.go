// Package crdschema validates operator custom resources (Strimzi, CloudNativePG,
// prometheus-operator) that have no Go type in our dependency set, using the
// API server's own structural-schema pruning and OpenAPI validation against
// trimmed CRD schemas kept in crds/. Unknown fields are reported the way
// `kubectl apply --validate=strict` would report them.
package crdschema

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"sigs.k8s.io/yaml"

	"github.com/whisperhq/whisper/internal/gitops/manifest"
)

//go:embed crds/*.yaml
var crdFiles embed.FS

type kindSchema struct {
	structural *structuralschema.Structural
	validator  validation.SchemaValidator
}

// Validator knows the schemas of crds/.
type Validator struct {
	kinds map[string]kindSchema // "group/version/Kind"
}

// New parses and compiles the embedded CRDs.
func New() (*Validator, error) {
	v := &Validator{kinds: map[string]kindSchema{}}
	err := fs.WalkDir(crdFiles, "crds", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := crdFiles.ReadFile(path)
		if err != nil {
			return err
		}
		for _, c := range manifest.Split(data) {
			if err := v.add(path, c.Data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("crd schemas: %w", err)
	}
	return v, nil
}

func (v *Validator) add(path string, data []byte) error {
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for _, ver := range crd.Spec.Versions {
		if ver.Schema == nil || ver.Schema.OpenAPIV3Schema == nil {
			continue
		}
		var internal apiextensions.JSONSchemaProps
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(ver.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
			return fmt.Errorf("%s %s: %w", path, crd.Name, err)
		}
		s, err := structuralschema.NewStructural(&internal)
		if err != nil {
			return fmt.Errorf("%s %s: not structural: %w", path, crd.Name, err)
		}
		val, _, err := validation.NewSchemaValidator(&internal)
		if err != nil {
			return fmt.Errorf("%s %s: %w", path, crd.Name, err)
		}
		v.kinds[crd.Spec.Group+"/"+ver.Name+"/"+crd.Spec.Names.Kind] = kindSchema{structural: s, validator: val}
	}
	return nil
}

// Kinds lists "group/version/Kind" of every known schema.
func (v *Validator) Kinds() []string {
	out := make([]string, 0, len(v.kinds))
	for k := range v.kinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Knows reports whether a schema exists for apiVersion/kind.
func (v *Validator) Knows(apiVersion, kind string) bool {
	_, ok := v.kinds[apiVersion+"/"+kind]
	return ok
}

// Validate reports unknown fields and schema violations of doc.
func (v *Validator) Validate(doc manifest.Document) []error {
	ks, ok := v.kinds[doc.APIVersion()+"/"+doc.Kind()]
	if !ok {
		return []error{fmt.Errorf("no schema for %s %s", doc.APIVersion(), doc.Kind())}
	}
	var errs []error
	// Pruning mutates: work on a fresh decode, not the shared object.
	var pruned map[string]any
	if err := json.Unmarshal(doc.JSON, &pruned); err != nil {
		return []error{err}
	}
	unknown := pruning.PruneWithOptions(pruned, ks.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range unknown {
		errs = append(errs, fmt.Errorf("unknown field %q", p))
	}
	for _, e := range validation.ValidateCustomResource(nil, doc.Object, ks.validator) {
		errs = append(errs, e)
	}
	return errs
}

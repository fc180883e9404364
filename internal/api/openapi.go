package api

import (
	_ "embed"
	"fmt"
	"net/http"

	"sigs.k8s.io/yaml"
)

// OpenAPIYAML is the OpenAPI 3.1 document of the whole API, kept in the repo
// as YAML and served as JSON at /openapi.json.
//
//go:embed openapi.yaml
var OpenAPIYAML []byte

// openAPIHandler serves the document, converted to JSON once.
func openAPIHandler() (http.HandlerFunc, error) {
	doc, err := yaml.YAMLToJSON(OpenAPIYAML)
	if err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(doc)
	}, nil
}

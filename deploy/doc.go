// Package deploy holds goinit's Kubernetes manifest (kubernetes.yaml) and
// the test that decodes it strictly into the k8s.io/api types and checks it
// against the flags and defaults of a goinit built from this tree.
//
// It is a module of its own so that k8s.io/api, which only this test uses,
// never enters goinit's go.mod. Run it with `cd deploy && go test ./...`.
package deploy

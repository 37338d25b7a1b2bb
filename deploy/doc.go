// Package deploy holds Hookline's container images and Kubernetes manifests;
// its tests render every kustomization and validate it offline.
package deploy

{{/* Common names and labels. */}}
{{- define "stagecoach.name" -}}stagecoach{{- end -}}

{{- define "stagecoach.fullname" -}}
{{- if contains "stagecoach" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-stagecoach" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stagecoach.labels" -}}
app.kubernetes.io/name: stagecoach
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stagecoach.selector" -}}
app.kubernetes.io/name: stagecoach
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "stagecoach.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Namespaces the operator watches and where stage RBAC is installed. */}}
{{- define "stagecoach.watchNamespaces" -}}
{{- if eq .Values.watch.mode "namespaces" -}}
{{- join "," .Values.watch.namespaces -}}
{{- end -}}
{{- end -}}

{{/* The operator's permissions, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "stagecoach.operatorRules" -}}
- apiGroups: [stagecoach.dev]
  resources: [agentpipelines, agentpipelinetemplates, modelproviders]
  verbs: [get, list, watch, patch, update]
- apiGroups: [stagecoach.dev]
  resources: [agentpipelines/status, modelproviders/status]
  verbs: [get, patch, update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* What a stage pod's runner may do: read and write ConfigMaps of the store. */}}
{{- define "stagecoach.stageRules" -}}
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, create, update, patch]
{{- end -}}

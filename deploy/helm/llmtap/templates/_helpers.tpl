{{/* The name of every object: the release's, with "llmtap" in it once. */}}
{{- define "llmtap.fullname" -}}
{{- if contains "llmtap" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-llmtap" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmtap.selectorLabels" -}}
app.kubernetes.io/name: llmtap
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "llmtap.labels" -}}
{{ include "llmtap.selectorLabels" . }}
app.kubernetes.io/component: agent
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* llmtap's scope flags: at least one scope, or the agent has nothing to watch. */}}
{{- define "llmtap.scopeArgs" -}}
{{- $scope := .Values.scope -}}
{{- if not (or $scope.all $scope.containers $scope.exes $scope.cgroups) -}}
{{- fail "scope: set all: true, or list containers, exes or cgroups" -}}
{{- end -}}
{{- if $scope.all }}
- --all
{{- end }}
{{- range $scope.containers }}
- --container
- {{ . | quote }}
{{- end }}
{{- range $scope.exes }}
- --exe
- {{ . | quote }}
{{- end }}
{{- range $scope.cgroups }}
- --cgroup
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
Names and labels shared by every template.
*/}}

{{- define "segue.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name: the release name, prefixed with the chart name unless it already contains it.
*/}}
{{- define "segue.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "segue.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "segue.selectorLabels" -}}
app.kubernetes.io/name: {{ include "segue.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "segue.labels" -}}
helm.sh/chart: {{ include "segue.chart" . }}
{{ include "segue.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: segue
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "segue.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "segue.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "segue.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The namespaces a namespace-scoped operator watches, as a JSON list: watchNamespaces, or the
release namespace when that list is empty; [] with rbac.scope=cluster. Use it with
`include "segue.watchNamespaces" . | fromJsonArray`.
*/}}
{{- define "segue.watchNamespaces" -}}
{{- if eq .Values.rbac.scope "namespace" }}
{{- .Values.watchNamespaces | default (list .Release.Namespace) | toJson }}
{{- else if .Values.watchNamespaces }}
{{- fail "watchNamespaces only applies with rbac.scope=namespace; with rbac.scope=cluster the operator watches every namespace" }}
{{- else }}
{{- list | toJson }}
{{- end }}
{{- end }}

{{/*
CEL variables shared by the admission policies (templates/admission.yaml).
*/}}
{{- define "segue.admission.variables" -}}
- name: newAnnotations
  expression: "has(object.metadata.annotations) ? object.metadata.annotations : {}"
- name: oldAnnotations
  expression: >-
    request.operation == 'UPDATE' && has(oldObject.metadata.annotations)
    ? oldObject.metadata.annotations : {}
# Each steering annotation and its companion, which names the person who set it.
- name: companions
  expression: >-
    {'segue.dev/approve': 'segue.dev/approved-by', 'segue.dev/promote': 'segue.dev/promoted-by',
    'segue.dev/abort': 'segue.dev/aborted-by', 'segue.dev/retry': 'segue.dev/retried-by',
    'segue.dev/pause': 'segue.dev/paused-by'}
# segue.dev/ annotations this request sets or changes (removing one is neither).
- name: set
  expression: >-
    variables.newAnnotations.filter(k, k.startsWith('segue.dev/')
    && (!(k in variables.oldAnnotations)
    || variables.oldAnnotations[k] != variables.newAnnotations[k]))
- name: steered
  expression: "variables.set.filter(k, k in variables.companions)"
# The request changes the plan of a Rollout: spec.steps, risk, hold or analysis.
- name: planEdited
  expression: >-
    request.operation == 'UPDATE' && request.resource.resource == 'rollouts' && !(true
    {{- range $f := list "steps" "risk" "hold" "analysis" }}
    && has(object.spec.{{ $f }}) == has(oldObject.spec.{{ $f }})
    && (!has(object.spec.{{ $f }}) || object.spec.{{ $f }} == oldObject.spec.{{ $f }})
    {{- end }})
# The Rollout had moved traffic before this request: a phase where the new version may
# carry weight, or a weight above 0.
- name: trafficMoved
  expression: >-
    request.operation == 'UPDATE' && has(oldObject.status)
    && ((has(oldObject.status.phase) && oldObject.status.phase in
    ['Progressing', 'Paused', 'AwaitingApproval', 'RollingBack'])
    || (has(oldObject.status.weight) && oldObject.status.weight > 0))
{{- end }}

{{/*
The namespaces the admission policies apply in: admission.namespaceSelector, else the
watched namespaces with rbac.scope=namespace, else every namespace.
*/}}
{{- define "segue.admission.matchResources" -}}
{{- $namespaces := include "segue.watchNamespaces" . | fromJsonArray }}
{{- if .Values.admission.namespaceSelector }}
matchResources:
  namespaceSelector:
    {{- toYaml .Values.admission.namespaceSelector | nindent 4 }}
{{- else if $namespaces }}
matchResources:
  namespaceSelector:
    matchExpressions:
      - key: kubernetes.io/metadata.name
        operator: In
        values: {{ toJson $namespaces }}
{{- end }}
{{- end }}

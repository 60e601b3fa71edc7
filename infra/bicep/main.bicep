// telemetry-hunt: the nightly job in Azure Container Apps, its results storage and Sentinel side.
// Deploy into the resource group of an existing Log Analytics workspace with Microsoft Sentinel:
//   az deployment group create -g <rg> -f infra/bicep/main.bicep -p workspaceName=<ws> image=<image>
// The same deployment in Terraform: infra/terraform. Both load the table schemas from
// infra/schema/tables.json, written by `telemetry-hunt schema`.

@description('Region of the new resources.')
param location string = resourceGroup().location

@description('Prefix of every resource name (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'mdetelhunt'

@description('The existing Log Analytics workspace (in this resource group) that Microsoft Sentinel uses.')
param workspaceName string

@description('Set to true only if Microsoft Sentinel is not yet enabled on the workspace.')
param onboardSentinel bool = false

@description('The job image, e.g. myregistry.azurecr.io/telemetry-hunt:0.1.0.')
param image string

@description('Registry server the image is pulled from with the job identity (grant it AcrPull); empty for a public image.')
param registryServer string = ''

@description('When the job runs: 5-field cron, evaluated in UTC (nightly at 02:30 by default).')
param cronExpression string = '30 2 * * *'

@description('A run that takes longer is stopped and counts as failed.')
@minValue(300)
@maxValue(86400)
param replicaTimeoutSeconds int = 7200

@description('How often a failed run is retried within one schedule slot (0 = never).')
@minValue(0)
@maxValue(5)
param replicaRetryLimit int = 1

@description('vCPUs of the job container (consumption plan: 0.25 to 4).')
param cpu string = '2.0'

@description('Memory of the job container; consumption plan pairs 2 GiB per vCPU.')
param memory string = '4Gi'

@description('Blob container of the result tables, created in the new storage account.')
param resultsContainerName string = 'telemetry-hunt'

@description('Storage account (in this resource group) holding exported DeviceNetworkEvents to read; empty when the source is the workspace.')
param sourceStorageAccountName string = ''

@description('Blob container of the exported DeviceNetworkEvents in sourceStorageAccountName.')
param sourceContainerName string = ''

@description('Contents of telemetry-hunt.toml to mount at /config (optional; see `telemetry-hunt config`). It holds no secrets.')
param configToml string = ''

@description('Days the Sentinel custom tables keep rows interactively (-1: the workspace default).')
param tableRetentionDays int = -1

@description('Whether the analytics rule on the findings table is enabled.')
param ruleEnabled bool = true

var schema = loadJsonContent('../schema/tables.json')
var storageAccountName = take('${namePrefix}${uniqueString(resourceGroup().id)}', 24)
var configMount = '/config'
// The config file is a Container Apps secret mounted as a file named after the secret.
var configSecret = 'telemetry-hunt.toml'
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  logAnalyticsReader: '73c42c96-874c-492b-b04d-ab87d138a893'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2025-02-01' existing = {
  name: workspaceName
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2024-11-30' = {
  name: '${namePrefix}-job'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2025-06-01' = {
  name: storageAccountName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-06-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource resultsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-06-01' = {
  parent: blobService
  name: resultsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource sourceContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-06-01' existing = if (!empty(sourceContainerName)) {
  name: '${sourceStorageAccountName}/default/${sourceContainerName}'
}

resource environment 'Microsoft.App/managedEnvironments@2025-07-01' = {
  name: '${namePrefix}-env'
  location: location
  properties: {
    // Container logs (stdout/stderr, JSON lines) land in the workspace's ContainerAppConsoleLogs_CL.
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: workspace.properties.customerId
        // Read by Resource Manager at deploy time; never a parameter, output or app setting.
        sharedKey: workspace.listKeys().primarySharedKey
      }
    }
  }
}

resource tables 'Microsoft.OperationalInsights/workspaces/tables@2025-02-01' = [
  for table in schema.tables: {
    parent: workspace
    name: table.name
    properties: {
      // Analytics: the plan scheduled rules and workbooks can query.
      plan: 'Analytics'
      retentionInDays: tableRetentionDays
      schema: {
        name: table.name
        columns: table.columns
      }
    }
  }
]

resource ingestionEndpoint 'Microsoft.Insights/dataCollectionEndpoints@2024-03-11' = {
  name: '${namePrefix}-dce'
  location: location
  properties: {
    networkAcls: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource collectionRule 'Microsoft.Insights/dataCollectionRules@2024-03-11' = {
  name: '${namePrefix}-dcr'
  location: location
  properties: {
    dataCollectionEndpointId: ingestionEndpoint.id
    streamDeclarations: schema.streamDeclarations
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: workspace.id
        }
      ]
    }
    dataFlows: [
      for table in schema.tables: {
        streams: [
          table.stream
        ]
        destinations: [
          'workspace'
        ]
        transformKql: table.transformKql
        outputStream: table.stream
      }
    ]
  }
  dependsOn: [
    tables
  ]
}

resource job 'Microsoft.App/jobs@2025-07-01' = {
  name: '${namePrefix}-job'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environment.id
    configuration: {
      triggerType: 'Schedule'
      replicaTimeout: replicaTimeoutSeconds
      replicaRetryLimit: replicaRetryLimit
      scheduleTriggerConfig: {
        cronExpression: cronExpression
        parallelism: 1
        replicaCompletionCount: 1
      }
      registries: empty(registryServer) ? [] : [
        {
          server: registryServer
          identity: identity.id
        }
      ]
      secrets: empty(configToml) ? [] : [
        {
          name: configSecret
          value: configToml
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'telemetry-hunt'
          image: image
          args: [
            'run'
          ]
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: concat([
            {
              name: 'TELEMETRY_HUNT_LOG_FORMAT'
              value: 'json'
            }
            {
              name: 'TELEMETRY_HUNT_IDENTITY'
              value: 'managed-identity'
            }
            {
              // The user-assigned identity the job authenticates with.
              name: 'TELEMETRY_HUNT_CLIENT_ID'
              value: identity.properties.clientId
            }
            {
              name: 'TELEMETRY_HUNT_RESULTS_ACCOUNT'
              value: storage.name
            }
            {
              name: 'TELEMETRY_HUNT_RESULTS_CONTAINER'
              value: resultsContainerName
            }
            {
              name: 'TELEMETRY_HUNT_SENTINEL_ENDPOINT'
              value: ingestionEndpoint.properties.logsIngestion.endpoint
            }
            {
              name: 'TELEMETRY_HUNT_SENTINEL_DCR_IMMUTABLE_ID'
              value: collectionRule.properties.immutableId
            }
          ], empty(sourceContainerName) ? [
            {
              // No export container: the job reads DeviceNetworkEvents from the workspace.
              name: 'TELEMETRY_HUNT_LA_WORKSPACE_ID'
              value: workspace.properties.customerId
            }
          ] : [
            {
              name: 'TELEMETRY_HUNT_SOURCE_ACCOUNT'
              value: sourceStorageAccountName
            }
            {
              name: 'TELEMETRY_HUNT_SOURCE_CONTAINER'
              value: sourceContainerName
            }
          ], empty(configToml) ? [] : [
            {
              name: 'TELEMETRY_HUNT_CONFIG'
              value: '${configMount}/${configSecret}'
            }
          ])
          volumeMounts: empty(configToml) ? [] : [
            {
              volumeName: 'config'
              mountPath: configMount
            }
          ]
        }
      ]
      volumes: empty(configToml) ? [] : [
        {
          name: 'config'
          storageType: 'Secret'
        }
      ]
    }
  }
}

// Least privilege: the job writes its results container only, reads the workspace (Log Analytics
// query API), publishes to its own DCR (Logs Ingestion API), and reads the source container.
resource resultsWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resultsContainer.id, identity.id, roles.storageBlobDataContributor)
  scope: resultsContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource workspaceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(workspace.id, identity.id, roles.logAnalyticsReader)
  scope: workspace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.logAnalyticsReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource ingestionPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(collectionRule.id, identity.id, roles.monitoringMetricsPublisher)
  scope: collectionRule
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource sourceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(sourceContainerName)) {
  name: guid(sourceContainer.id, identity.id, roles.storageBlobDataReader)
  scope: sourceContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource sentinel 'Microsoft.SecurityInsights/onboardingStates@2025-09-01' = if (onboardSentinel) {
  name: 'default'
  scope: workspace
  properties: {}
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspace.id, 'telemetry-hunt-workbook')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'Defender for Endpoint telemetry (telemetry-hunt)'
    category: 'sentinel'
    sourceId: workspace.id
    serializedData: loadTextContent('../workbook/telemetry-hunt.workbook.json')
    version: '1.0'
  }
}

resource findingsRule 'Microsoft.SecurityInsights/alertRules@2025-09-01' = {
  name: guid(workspace.id, 'telemetry-hunt-findings-rule')
  scope: workspace
  kind: 'Scheduled'
  properties: {
    displayName: 'Defender for Endpoint telemetry: new finding'
    description: 'A finding of the nightly telemetry-hunt job (unexpected process, lookalike host, unusual port, volume anomaly, silent devices) on the channel between Defender for Endpoint sensors and their cloud.'
    enabled: ruleEnabled
    query: loadTextContent('../sentinel/findings-rule.kql')
    queryFrequency: 'P1D'
    queryPeriod: 'P3D'
    severity: 'Medium'
    triggerOperator: 'GreaterThan'
    triggerThreshold: 0
    suppressionEnabled: false
    suppressionDuration: 'PT5H'
    tactics: [
      'CommandAndControl'
      'Exfiltration'
      'DefenseEvasion'
    ]
    techniques: [
      'T1071'
      'T1567'
      'T1562'
    ]
    eventGroupingSettings: {
      aggregationKind: 'AlertPerResult'
    }
    alertDetailsOverride: {
      alertDisplayNameFormat: 'MDE telemetry: {{FindingType}} on {{RemoteHost}}'
      alertDescriptionFormat: '{{Description}}'
      alertSeverityColumnName: 'Severity'
    }
    customDetails: {
      FindingId: 'FindingId'
      FindingType: 'FindingType'
      DeviceCount: 'DeviceCount'
      Score: 'Score'
      EvidenceUri: 'EvidenceUri'
    }
    entityMappings: [
      {
        entityType: 'Host'
        fieldMappings: [
          {
            identifier: 'HostName'
            columnName: 'HostName'
          }
        ]
      }
      {
        entityType: 'Process'
        fieldMappings: [
          {
            identifier: 'CommandLine'
            columnName: 'ProcessPath'
          }
        ]
      }
      {
        entityType: 'URL'
        fieldMappings: [
          {
            identifier: 'Url'
            columnName: 'RemoteHost'
          }
        ]
      }
    ]
    incidentConfiguration: {
      createIncident: true
      groupingConfiguration: {
        enabled: true
        reopenClosedIncident: false
        lookbackDuration: 'P1D'
        matchingMethod: 'Selected'
        groupByCustomDetails: [
          'FindingType'
        ]
        groupByEntities: []
        groupByAlertDetails: []
      }
    }
  }
  dependsOn: [
    sentinel
    tables
  ]
}

output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output storageAccountName string = storage.name
output resultsContainerUrl string = '${storage.properties.primaryEndpoints.blob}${resultsContainerName}'
output ingestionEndpoint string = ingestionEndpoint.properties.logsIngestion.endpoint
output dataCollectionRuleImmutableId string = collectionRule.properties.immutableId
output jobName string = job.name
output workbookId string = workbook.id

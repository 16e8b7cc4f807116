-- Orchestra core on PostgreSQL: the eight non-chat tables of EF Core migration
-- 20250927103132_InitialPostgreSQLMigration, exactly as EF Core 9's Npgsql
-- provider creates them (types, nullability, key and index names, FK actions):
-- Repositories, TaskTemplates, WorkflowDefinitions, Agents, UserPreferences,
-- PerformanceMetrics, Tasks, OrchestrationLogs, with their 37 indexes and
-- 10 foreign keys (SET NULL, CASCADE, and RESTRICT for Tasks.ParentTaskId).
-- EF's history row 20250927103132_InitialPostgreSQLMigration is written only
-- when this AND 20250927103132_AddChatTables are applied.
-- Rollback (20250927103131_OrchestraCore.rollback.sql) drops all eight
-- tables: every agent, task, log, metric, template, workflow, preference and
-- repository row is lost. Roll back the chat tables and AgentSessions first;
-- they depend on this.

CREATE TABLE "Repositories" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Path" character varying(500) NOT NULL,
    "Description" character varying(1000),
    "Type" integer NOT NULL,
    "IsActive" boolean NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "LastAccessedAt" timestamp with time zone,
    "SettingsJson" text,
    "DefaultBranch" character varying(100),
    "AllowedOperationsJson" text NOT NULL,
    "TotalTasks" integer NOT NULL,
    "SuccessfulTasks" integer NOT NULL,
    "FailedTasks" integer NOT NULL,
    "TotalExecutionTime" bigint NOT NULL,
    "AllowedOperations" text[] NOT NULL,
    CONSTRAINT "PK_Repositories" PRIMARY KEY ("Id")
);

CREATE TABLE "TaskTemplates" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Description" character varying(1000),
    "CommandTemplate" character varying(2000) NOT NULL,
    "DefaultPriority" integer NOT NULL,
    "Category" character varying(100),
    "IsActive" boolean NOT NULL,
    "ParametersJson" text,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    CONSTRAINT "PK_TaskTemplates" PRIMARY KEY ("Id")
);

CREATE TABLE "WorkflowDefinitions" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Description" character varying(1000),
    "DefinitionJson" text NOT NULL,
    "IsActive" boolean NOT NULL,
    "Version" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    CONSTRAINT "PK_WorkflowDefinitions" PRIMARY KEY ("Id")
);

CREATE TABLE "Agents" (
    "Id" character varying(128) NOT NULL,
    "Name" character varying(255) NOT NULL,
    "Type" character varying(100) NOT NULL,
    "RepositoryPath" character varying(500) NOT NULL,
    "Status" integer NOT NULL,
    "LastPing" timestamp with time zone NOT NULL,
    "CurrentTask" character varying(128),
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "IsDeleted" boolean NOT NULL,
    "ConfigurationJson" text,
    "MaxConcurrentTasks" integer NOT NULL,
    "HealthCheckInterval" bigint NOT NULL,
    "TotalTasksCompleted" integer NOT NULL,
    "TotalTasksFailed" integer NOT NULL,
    "TotalExecutionTime" bigint NOT NULL,
    "AverageExecutionTime" double precision NOT NULL,
    "SessionId" character varying(128),
    "RepositoryId" character varying(128),
    CONSTRAINT "PK_Agents" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_Agents_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories" ("Id") ON DELETE SET NULL
);

CREATE TABLE "UserPreferences" (
    "Id" character varying(128) NOT NULL,
    "UserId" character varying(128) NOT NULL,
    "Key" character varying(255) NOT NULL,
    "Value" text NOT NULL,
    "Type" integer NOT NULL,
    "Category" character varying(100),
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "RepositoryId" character varying(128),
    CONSTRAINT "PK_UserPreferences" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_UserPreferences_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories" ("Id") ON DELETE CASCADE
);

CREATE TABLE "PerformanceMetrics" (
    "Id" character varying(128) NOT NULL,
    "AgentId" character varying(128) NOT NULL,
    "MetricName" character varying(100) NOT NULL,
    "Value" double precision NOT NULL,
    "Unit" character varying(50),
    "MeasuredAt" timestamp with time zone NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "Description" character varying(500),
    CONSTRAINT "PK_PerformanceMetrics" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_PerformanceMetrics_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents" ("Id") ON DELETE CASCADE
);

CREATE TABLE "Tasks" (
    "Id" character varying(128) NOT NULL,
    "Command" character varying(2000) NOT NULL,
    "AgentId" character varying(128),
    "RepositoryPath" character varying(500) NOT NULL,
    "Priority" integer NOT NULL,
    "Status" integer NOT NULL,
    "CreatedAt" timestamp with time zone NOT NULL,
    "StartedAt" timestamp with time zone,
    "CompletedAt" timestamp with time zone,
    "ExecutionDuration" bigint,
    "Result" text,
    "ErrorMessage" text,
    "RetryCount" integer NOT NULL,
    "CorrelationId" character varying(128),
    "WorkflowId" character varying(128),
    "ParentTaskId" character varying(128),
    "WorkflowStep" integer NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    "RepositoryId" character varying(128),
    CONSTRAINT "PK_Tasks" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_Tasks_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents" ("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_Tasks_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories" ("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_Tasks_Tasks_ParentTaskId" FOREIGN KEY ("ParentTaskId") REFERENCES "Tasks" ("Id") ON DELETE RESTRICT,
    CONSTRAINT "FK_Tasks_WorkflowDefinitions_WorkflowId" FOREIGN KEY ("WorkflowId") REFERENCES "WorkflowDefinitions" ("Id") ON DELETE SET NULL
);

CREATE TABLE "OrchestrationLogs" (
    "Id" character varying(128) NOT NULL,
    "EventType" character varying(100) NOT NULL,
    "Message" text NOT NULL,
    "Level" integer NOT NULL,
    "AgentId" character varying(128),
    "TaskId" character varying(128),
    "RepositoryId" character varying(128),
    "AdditionalData" text,
    "CreatedAt" timestamp with time zone NOT NULL,
    "UpdatedAt" timestamp with time zone NOT NULL,
    CONSTRAINT "PK_OrchestrationLogs" PRIMARY KEY ("Id"),
    CONSTRAINT "FK_OrchestrationLogs_Agents_AgentId" FOREIGN KEY ("AgentId") REFERENCES "Agents" ("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_OrchestrationLogs_Repositories_RepositoryId" FOREIGN KEY ("RepositoryId") REFERENCES "Repositories" ("Id") ON DELETE SET NULL,
    CONSTRAINT "FK_OrchestrationLogs_Tasks_TaskId" FOREIGN KEY ("TaskId") REFERENCES "Tasks" ("Id") ON DELETE SET NULL
);

CREATE INDEX "IX_Agents_RepositoryId" ON "Agents" ("RepositoryId");

CREATE INDEX "IX_Agents_RepositoryPath" ON "Agents" ("RepositoryPath");

CREATE INDEX "IX_Agents_SessionId" ON "Agents" ("SessionId");

CREATE INDEX "IX_Agents_Status" ON "Agents" ("Status");

CREATE INDEX "IX_Agents_Status_RepositoryPath" ON "Agents" ("Status", "RepositoryPath");

CREATE INDEX "IX_OrchestrationLogs_AgentId_CreatedAt" ON "OrchestrationLogs" ("AgentId", "CreatedAt");

CREATE INDEX "IX_OrchestrationLogs_CreatedAt" ON "OrchestrationLogs" ("CreatedAt");

CREATE INDEX "IX_OrchestrationLogs_EventType" ON "OrchestrationLogs" ("EventType");

CREATE INDEX "IX_OrchestrationLogs_Level" ON "OrchestrationLogs" ("Level");

CREATE INDEX "IX_OrchestrationLogs_RepositoryId" ON "OrchestrationLogs" ("RepositoryId");

CREATE INDEX "IX_OrchestrationLogs_TaskId_CreatedAt" ON "OrchestrationLogs" ("TaskId", "CreatedAt");

CREATE INDEX "IX_PerformanceMetrics_AgentId" ON "PerformanceMetrics" ("AgentId");

CREATE INDEX "IX_PerformanceMetrics_AgentId_MetricName_MeasuredAt" ON "PerformanceMetrics" ("AgentId", "MetricName", "MeasuredAt");

CREATE INDEX "IX_PerformanceMetrics_MeasuredAt" ON "PerformanceMetrics" ("MeasuredAt");

CREATE INDEX "IX_PerformanceMetrics_MetricName" ON "PerformanceMetrics" ("MetricName");

CREATE INDEX "IX_Repositories_IsActive" ON "Repositories" ("IsActive");

CREATE UNIQUE INDEX "IX_Repositories_Path" ON "Repositories" ("Path");

CREATE INDEX "IX_Repositories_Type" ON "Repositories" ("Type");

CREATE INDEX "IX_Tasks_AgentId" ON "Tasks" ("AgentId");

CREATE INDEX "IX_Tasks_AgentId_Status" ON "Tasks" ("AgentId", "Status");

CREATE INDEX "IX_Tasks_CorrelationId" ON "Tasks" ("CorrelationId");

CREATE INDEX "IX_Tasks_CreatedAt" ON "Tasks" ("CreatedAt");

CREATE INDEX "IX_Tasks_ParentTaskId" ON "Tasks" ("ParentTaskId");

CREATE INDEX "IX_Tasks_RepositoryId" ON "Tasks" ("RepositoryId");

CREATE INDEX "IX_Tasks_Status" ON "Tasks" ("Status");

CREATE INDEX "IX_Tasks_Status_Priority" ON "Tasks" ("Status", "Priority");

CREATE INDEX "IX_Tasks_WorkflowId" ON "Tasks" ("WorkflowId");

CREATE INDEX "IX_TaskTemplates_Category" ON "TaskTemplates" ("Category");

CREATE INDEX "IX_TaskTemplates_IsActive" ON "TaskTemplates" ("IsActive");

CREATE INDEX "IX_TaskTemplates_Name" ON "TaskTemplates" ("Name");

CREATE INDEX "IX_UserPreferences_Category" ON "UserPreferences" ("Category");

CREATE INDEX "IX_UserPreferences_RepositoryId" ON "UserPreferences" ("RepositoryId");

CREATE UNIQUE INDEX "IX_UserPreferences_UserId_Key_RepositoryId" ON "UserPreferences" ("UserId", "Key", "RepositoryId");

CREATE INDEX "IX_UserPreferences_UserId_Type" ON "UserPreferences" ("UserId", "Type");

CREATE INDEX "IX_WorkflowDefinitions_IsActive" ON "WorkflowDefinitions" ("IsActive");

CREATE INDEX "IX_WorkflowDefinitions_Name" ON "WorkflowDefinitions" ("Name");

CREATE INDEX "IX_WorkflowDefinitions_Name_Version" ON "WorkflowDefinitions" ("Name", "Version");

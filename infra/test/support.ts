/** Test support: a stage's app built the way `bin/app.ts` builds it, without compiling Rust. */
import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';
import { APP_CONTEXT, addStage, BargeStacks } from '../lib/app';
import { StageOverrides, stageConfig } from '../lib/config';

/** A built app and its stacks' templates. */
export interface Built extends BargeStacks {
  readonly app: App;
  readonly templates: { stateful: Template; service: Template; pipeline: Template };
}

/** The stacks of `stage` with `overrides`; bundling is skipped (no `cargo lambda build`). */
export function build(stage = 'dev', overrides: StageOverrides = {}): Built {
  const app = new App({ context: { ...APP_CONTEXT, 'aws:cdk:bundling-stacks': [] } });
  const stacks = addStage(app, stageConfig(stage, overrides));
  // Templates are synthesized when first asked for: a test may add to the tree before.
  const cache: Partial<Built['templates']> = {};
  const templates = {
    get stateful() {
      return (cache.stateful ??= Template.fromStack(stacks.stateful));
    },
    get service() {
      return (cache.service ??= Template.fromStack(stacks.service));
    },
    get pipeline() {
      return (cache.pipeline ??= Template.fromStack(stacks.pipeline));
    },
  };
  return { app, ...stacks, templates };
}

/** A policy statement as CloudFormation has it. */
export interface Statement {
  Sid?: string;
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, Record<string, unknown>>;
}

/** Every statement of the policies attached to the role whose logical id starts with `rolePrefix`. */
export function roleStatements(template: Template, rolePrefix: string): Statement[] {
  const statements: Statement[] = [];
  for (const policy of Object.values(template.findResources('AWS::IAM::Policy')) as { Properties: { Roles: { Ref: string }[]; PolicyDocument: { Statement: Statement[] } } }[]) {
    if (policy.Properties.Roles.some((role) => role.Ref.startsWith(rolePrefix))) {
      statements.push(...policy.Properties.PolicyDocument.Statement);
    }
  }
  for (const [id, role] of Object.entries(template.findResources('AWS::IAM::Role')) as [string, { Properties: { Policies?: { PolicyDocument: { Statement: Statement[] } }[] } }][]) {
    if (id.startsWith(rolePrefix)) {
      for (const policy of role.Properties.Policies ?? []) {
        statements.push(...policy.PolicyDocument.Statement);
      }
    }
  }
  return statements;
}

/** The actions of `statements`, flattened. */
export function actions(statements: Statement[]): string[] {
  return statements.flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]));
}

/** The one logical id of `type` in `template` whose id starts with `prefix`. */
export function logicalId(template: Template, type: string, prefix: string): string {
  const ids = Object.keys(template.findResources(type)).filter((id) => id.startsWith(prefix));
  if (ids.length !== 1) {
    throw new Error(`expected one ${type} starting with ${prefix}, found ${ids.join(', ') || 'none'}`);
  }
  return ids[0];
}

/** A resource or ARN of a statement as one string (`<Logical.Arn>` for references), as cdk-nag words it. */
export function render(value: unknown): string {
  return flattenCfnReference(value);
}

/** The resources of `statement`, rendered. */
export function resources(statement: Statement): string[] {
  return (Array.isArray(statement.Resource) ? statement.Resource : [statement.Resource]).map(render);
}

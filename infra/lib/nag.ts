/**
 * Scoped cdk-nag acknowledgments of IAM wildcards (AwsSolutions-IAM5).
 *
 * cdk-nag reports each wildcard of a policy as its own finding; an acknowledgment must name
 * the exact finding. A construct that grants a wildcard on purpose declares it on the
 * principal it grants to, with the reason (`expectWildcards`). `BargeChecks` (cdk-nag's
 * AwsSolutions pack) first computes each policy's findings the way cdk-nag does — after
 * synthesis resolved cross-stack references, so the words are the ones cdk-nag sees — and
 * acknowledges those, and only those, that the principal declared. Any other wildcard stays
 * a finding and fails the synth and the tests.
 */
import { CfnResource, Stack, Validations } from 'aws-cdk-lib';
import { CfnManagedPolicy, CfnPolicy, CfnRole } from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks } from 'cdk-nag';
import { flattenCfnReference } from 'cdk-nag/lib/utils/flatten-cfn-reference';
import { IConstruct } from 'constructs';

/** A wildcard a principal is meant to have. */
export interface ExpectedWildcard {
  /** Matches the finding as cdk-nag words it: `Action::…` or `Resource::…`. */
  readonly finding: RegExp;
  /** Why it is needed and what bounds it. */
  readonly reason: string;
}

const EXPECTED = new WeakMap<object, ExpectedWildcard[]>();

/**
 * Declares wildcards `principal` (a role or managed policy construct, or a grantee's
 * principal) is meant to have.
 */
export function expectWildcards(principal: object, wildcards: ExpectedWildcard[]): void {
  EXPECTED.set(principal, [...(EXPECTED.get(principal) ?? []), ...wildcards]);
}

interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
}

function list<T>(value: T | T[] | undefined): T[] {
  if (value === undefined) {
    return [];
  }
  return Array.isArray(value) ? value : [value];
}

/** The IAM5 findings of a policy document, as cdk-nag computes them. */
export function wildcardFindings(document: { Statement?: Statement[] }): string[] {
  const findings = new Set<string>();
  for (const statement of document.Statement ?? []) {
    if (statement.Effect !== 'Allow') {
      continue;
    }
    for (const action of list(statement.Action).filter((a) => a.includes('*'))) {
      findings.add(`Action::${action}`);
    }
    for (const resource of list(statement.Resource).map((r) => flattenCfnReference(r)).filter((r) => r.includes('*'))) {
      findings.add(`Resource::${resource}`);
    }
  }
  return [...findings];
}

function documents(node: CfnResource): { Statement?: Statement[] }[] {
  const stack = Stack.of(node);
  if (node instanceof CfnPolicy || node instanceof CfnManagedPolicy) {
    return [stack.resolve(node.policyDocument)];
  }
  if (node instanceof CfnRole) {
    const policies = (stack.resolve(node.policies) ?? []) as { policyDocument: unknown }[];
    return policies.map((policy) => stack.resolve(policy.policyDocument));
  }
  return [];
}

/** Acknowledges, on each IAM resource under `scope`, the wildcard findings its principal declared. */
export function acknowledgeExpectedWildcards(scope: IConstruct): void {
  for (const node of scope.node.findAll()) {
    if (!(node instanceof CfnPolicy || node instanceof CfnManagedPolicy || node instanceof CfnRole)) {
      continue;
    }
    const expected = node.node.scopes.flatMap((ancestor) => EXPECTED.get(ancestor) ?? []);
    if (expected.length === 0) {
      continue;
    }
    for (const finding of documents(node).flatMap(wildcardFindings)) {
      // One finding can stand for several statements (the reaper's launch and terminate
      // statements both name `instance/*`): its acknowledgment gives every declared reason.
      const reasons = [...new Set(expected.filter((wildcard) => wildcard.finding.test(finding)).map((wildcard) => wildcard.reason))];
      if (reasons.length > 0) {
        Validations.of(node).acknowledge({ id: `AwsSolutions-IAM5[${finding}]`, reason: reasons.join('; ') });
      }
    }
  }
}

/** cdk-nag's AwsSolutions pack, with the declared wildcards acknowledged first. */
export class BargeChecks extends AwsSolutionsChecks {
  public override validateScope(scope: IConstruct) {
    acknowledgeExpectedWildcards(scope);
    return super.validateScope(scope);
  }
}

/** Acknowledges `scope`'s use of the AWS managed policy `name` (AwsSolutions-IAM4), with `reason`. */
export function acknowledgeManagedPolicy(scope: IConstruct, name: string, reason: string): void {
  Validations.of(scope).acknowledge({ id: `AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/${name}]`, reason });
}

/**
 * Acknowledges, on the CDK-provided custom-resource provider `id` of `stack` (when present),
 * the AWS managed basic execution policy it uses, and its runtime (pinned by aws-cdk-lib).
 */
export function acknowledgeCdkProvider(stack: IConstruct, id: string, purpose: string): void {
  const provider = stack.node.tryFindChild(id);
  if (provider) {
    acknowledgeManagedPolicy(provider, 'service-role/AWSLambdaBasicExecutionRole', `CDK's ${purpose}: its own logs only`);
    Validations.of(provider).acknowledge({ id: 'AwsSolutions-L1', reason: `CDK's ${purpose}: aws-cdk-lib pins its runtime` });
  }
}

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import * as iam from 'aws-cdk-lib/aws-iam';
import { BargeChecks, expectWildcards } from '../lib/nag';
import { build } from './support';

function violations(built: ReturnType<typeof build>) {
  built.app.synth();
  const report = new BargeChecks(built.app).validateScope(built.app);
  return report.violations.flatMap((v) => v.violatingResources.map((r) => `${v.ruleName} ${r.constructPath}`));
}

describe('cdk-nag AwsSolutions', () => {
  it('finds nothing unacknowledged in any stack of a dev stage', () => {
    assert.deepEqual(violations(build('dev')), []);
  });

  it('finds nothing unacknowledged in prod, nor with configured subnets', () => {
    assert.deepEqual(violations(build('prod', { network: { vpcId: 'vpc-0123456789abcdef0', subnetIds: ['subnet-0aaaaaaaaaaaaaaa1'] } })), []);
  });

  it('still reports a wildcard nobody declared, and one declared elsewhere', () => {
    const built = build('dev');
    const rogue = new iam.Role(built.service, 'Rogue', { assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com') });
    rogue.addToPolicy(new iam.PolicyStatement({ actions: ['s3:*'], resources: ['*'] }));
    // A wildcard declared for the worker role must not cover another role.
    expectWildcards(built.service.fleet.role, [{ finding: /^Resource::\*$/, reason: 'test' }]);
    const found = violations(built);
    assert.ok(found.includes('AwsSolutions-IAM5[Action::s3:*] barge-dev-service/Rogue/DefaultPolicy/Resource'), found.join('\n'));
    assert.ok(found.includes('AwsSolutions-IAM5[Resource::*] barge-dev-service/Rogue/DefaultPolicy/Resource'), found.join('\n'));
  });
});

"""imagegw_dev.template, the template reader the tests and the local stack share."""

from imagegw_dev.template import function_properties, loads_template, resources


def test_the_loader_reads_short_form_intrinsics_as_cloudformation_does():
    template = loads_template(
        """
AWSTemplateFormatVersion: 2010-09-09
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      A: !Ref Bucket
      B: !GetAtt Queue.Arn
      C: !Sub "${AWS::StackName}-x"
      D: !If [IsProd, !Ref AWS::NoValue, [1, 2]]
      E: !FindInMap [M, !Ref P, K]
      F: !Condition IsProd
  Other:
    Type: AWS::S3::Bucket
"""
    )
    assert template["AWSTemplateFormatVersion"] == "2010-09-09"
    assert resources(template, "AWS::S3::Bucket") == {"Other": {}}
    assert resources(template, "AWS::Serverless::Function")["Fn"] == {
        "A": {"Ref": "Bucket"},
        "B": {"Fn::GetAtt": ["Queue", "Arn"]},
        "C": {"Fn::Sub": "${AWS::StackName}-x"},
        "D": {"Fn::If": ["IsProd", {"Ref": "AWS::NoValue"}, [1, 2]]},
        "E": {"Fn::FindInMap": ["M", {"Ref": "P"}, "K"]},
        "F": {"Condition": "IsProd"},
    }


def test_function_properties_merge_globals_the_way_sam_does():
    template = loads_template(
        """
Globals:
  Function:
    Timeout: 3
    Layers: [!Ref L1]
    Environment: {Variables: {A: "1", B: "2"}}
    Tracing: !If [C, Active, PassThrough]
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Timeout: 10
      Layers: [!Ref L2]
      Environment: {Variables: {B: "3"}}
      Tracing: Active
"""
    )
    assert function_properties(template, "Fn") == {
        "Timeout": 10,
        "Layers": [{"Ref": "L1"}, {"Ref": "L2"}],
        "Environment": {"Variables": {"A": "1", "B": "3"}},
        "Tracing": "Active",
    }
